"""Signature of the corporate-tone rewriter (`programs/tone.py`).

The docstring is the short instruction the distilled student sees; the teacher's instructions are the
style guide's (`datasets/tone/style_guide.yaml`), set by the program.
"""

import dspy


class CorporateRewrite(dspy.Signature):
    """Rewrite the text in the house corporate tone."""

    text: str = dspy.InputField()
    # room for a few sentences and the sign-off: a bound that cuts the text drops the sign-off first
    rewrite: str = dspy.OutputField(max_length=400)
