"""kompakt-train: importance, structured pruning and knowledge distillation of Qwen2-Audio students
that `kompakt convert` turns into `.kpk` files."""

__version__ = "0.1.0"
