"""Signatures of the reflective multi-hop RAG program (`programs/rag.py`)."""

import dspy


class GenerateQuery(dspy.Signature):
    """Write a short search query that finds the missing fact needed to answer the question, given the notes so far."""

    question: str = dspy.InputField()
    notes: list[str] = dspy.InputField(desc="facts found so far")
    query: str = dspy.OutputField(desc="a few keywords, not a sentence")


class JudgeContext(dspy.Signature):
    """Decide whether the passages contain the facts needed to answer the question."""

    question: str = dspy.InputField()
    passages: list[str] = dspy.InputField()
    supported: bool = dspy.OutputField(desc="true if the passages are enough to answer")


class RewriteQuery(dspy.Signature):
    """The last search did not find what the question needs. Write a different, more specific search query."""

    question: str = dspy.InputField()
    failed_query: str = dspy.InputField()
    query: str = dspy.OutputField(desc="a few keywords, not a sentence")


class TakeNotes(dspy.Signature):
    """Extract the facts from the passages that help answer the question. Keep the notes short."""

    question: str = dspy.InputField()
    passages: list[str] = dspy.InputField()
    notes: list[str] = dspy.OutputField(desc="at most 3 short facts")


class AnswerWithCitations(dspy.Signature):
    """Answer the question from the passages with a short span (a name, date, number or yes/no). Cite the passages used by their [number]."""

    question: str = dspy.InputField()
    passages: list[str] = dspy.InputField(desc="numbered passages")
    answer: str = dspy.OutputField(desc="a few words, copied from the passages when possible")
    citations: list[int] = dspy.OutputField(desc="numbers of the passages that support the answer")
