"""`python -m scicot_jax.train`: the train binary (see scicot_jax.train.cli)."""

from scicot_jax.train.cli import console_entry

if __name__ == "__main__":
    console_entry()
