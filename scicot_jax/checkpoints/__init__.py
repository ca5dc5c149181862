"""Every checkpoint format and conversion: trainer (orbax), params-only, t5x, Hugging Face."""
