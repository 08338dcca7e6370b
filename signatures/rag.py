"""Signatures of the reflective multi-hop RAG program (`programs/rag.py`).

Written for a 0.5B chat model: one short instruction each, and every output bounded by what it means
(`max_length` is characters for a string, items for a list), so the constrained adapter's schema keeps a
small model from filling a field with junk. The answer is asked for alone and in plain text (the program builds
it with `reply="text"`); the program cites the passages that hold it.
"""

import dspy


class GenerateQuery(dspy.Signature):
    """The passages answer only part of the question. Name the person, place, work or thing to look up next to answer the rest."""

    passages: list[str] = dspy.InputField(desc="what the first search found")
    question: str = dspy.InputField()
    query: str = dspy.OutputField(desc="a name or a few keywords", max_length=60)


class RewriteQuery(dspy.Signature):
    """The passages found so far do not answer the question. Write a different, more specific search query."""

    question: str = dspy.InputField()
    failed_query: str = dspy.InputField()
    query: str = dspy.OutputField(desc="a few keywords, not a sentence", max_length=80)


class AnswerFromPassages(dspy.Signature):
    """Answer the question from the passages with a short span (a name, date, number or yes/no)."""

    passages: list[str] = dspy.InputField()
    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="a few words", max_length=60)
