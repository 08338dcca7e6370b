"""Distillation into LoRA students: teacher traces → SFT dataset → LoRA SFT → preference pairs → DPO →
student artifacts served by the engine as LoRA adapters. `dspyc distill PROGRAM` runs it all."""

from dspyc.distill.pairs import Candidate, CandidateGroup, PreferencePair, build_pairs
from dspyc.distill.recipe import DPORecipe, SFTRecipe
from dspyc.distill.student import attach, serve
from dspyc.distill.traces import SFTRow, TeacherRun, collect, sft_rows

__all__ = [
    "Candidate",
    "CandidateGroup",
    "DPORecipe",
    "PreferencePair",
    "SFTRecipe",
    "SFTRow",
    "TeacherRun",
    "attach",
    "build_pairs",
    "collect",
    "serve",
    "sft_rows",
]
