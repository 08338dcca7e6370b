"""Signature of the corporate-tone rewriter (`programs/tone.py`).

The docstring is the short instruction the distilled student sees; the teacher's instructions are the
style guide's (`datasets/tone/style_guide.yaml`), set by the program.
"""

import dspy


class CorporateRewrite(dspy.Signature):
    """Rewrite the text in the house corporate tone."""

    text: str = dspy.InputField()
    rewrite: str = dspy.OutputField()
