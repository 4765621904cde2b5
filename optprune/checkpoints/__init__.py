"""Model and checkpoint I/O: loading (the embedded default, GGUF, saved folders), the saved formats, the
output folder of a run (its report, completion marker and resume state)."""
from .card import CARD, model_card, read_card
from .formats import SAVE_FORMATS, check_save_format, load_sparse_checkpoint, save_checkpoint, saved_tensors
from .model_io import check_model_argument, load_model, load_pretrained, model_source, save_model
from .output import REPORT, OutputFolder, check_writable, check_writable_file
