"""sidjax: reasoning generative recommendation over Semantic IDs, in JAX/Flax.

The pins below are one matched set, tested together on Python 3.11 (CPU).
jax >= 0.11 needs Python >= 3.12, so 0.10.x is the line for 3.11.
"""
from setuptools import find_packages, setup

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "numpy==2.4.6",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "openai==3.54.0",
    "tqdm==4.70.1",
    "tensorboardX==2.6.5",
    "matplotlib==3.11.2",
    "gguf==0.19.0",
    "jinja2==3.1.6",
    "scipy==1.17.1",  # sparse transition counts (sidjax.baselines.markov); jax needs it too
    # The TFDS copy of a dataset (sidjax.data.tfds_copy, data.source = "tfds"): builders that write
    # ArrayRecord and read it back without TensorFlow, which none of these pulls in.
    "tensorflow-datasets==4.9.10",
    "array-record==0.8.6",
    "importlib-resources==7.1.0",  # tensorflow-datasets imports it when building but does not require it
]

# PyTorch + transformers are only the reference implementations that the parity
# tests and benchmarks compare against; torch 2.13.0 is the CPU build.
REFERENCE = [
    "accelerate==1.15.0",
    "torch==2.13.0",
    "transformers==5.23.0",
]

setup(
    name="sidjax",
    version="0.1.0",
    description="Reasoning generative recommendation over Semantic IDs in JAX/Flax",
    python_requires=">=3.11",
    packages=find_packages(include=["sidjax", "sidjax.*", "experiments", "experiments.*", "bench", "bench.*"]),
    package_data={"sidjax.data": ["industrial_and_scientific/*.gz", "industrial_and_scientific/*.md",
                                  "office_2014/*.gz", "office_2014/*.md"]},
    install_requires=CORE,
    extras_require={
        "test": REFERENCE + ["pytest==9.2.0", "portpicker==1.6.0"],
        "bench": REFERENCE,
    },
)
