"""Evaluation: WikiText-2 perplexity and zero-shot accuracy (one task table, two scorers)."""
from .perplexity import wikitext2_perplexity
from .tasks import TASKS, Task
from .zeroshot import SCORERS, check_zeroshot, evaluate_tasks, evaluate_zeroshot
from .harness import evaluate_harness, harness_available
