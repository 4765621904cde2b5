from .run import eval_main, prune_main
