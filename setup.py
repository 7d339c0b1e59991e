"""Package definition for memorizing_jax."""
import setuptools

setuptools.setup(
    name="memorizing_jax",
    version="0.1.0",
    description="Memorizing Transformers (Wu et al., ICLR 2022) in JAX/Flax, TPU-first.",
    packages=setuptools.find_packages(include=["memorizing_jax", "memorizing_jax.*"])
    + ["memorizing_jax.gin_files"],
    # The top-level gin/ folder ships inside the installed package as its data folder
    # memorizing_jax/gin_files/ (an editable install reads gin/ in place).
    package_dir={"memorizing_jax.gin_files": "gin"},
    package_data={"memorizing_jax.gin_files": ["*.gin", "*/*.gin"]},
    python_requires=">=3.11",
    # Every third-party package the code imports (tensorflow: the data pipeline and
    # tfds; absl: flags and logging; etils: paths that may be gs://).
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "tensorflow>=2.16",
        "tensorflow-datasets>=4.9.6",
        "seqio>=0.0.19",
        "gin-config>=0.5.0",
        "clu>=0.0.12",
        "tensorboard>=2.15",  # clu's metric writers import it
        "sentencepiece>=0.2.0",
        "absl-py>=2.0",
        "etils[epath]>=1.7",
        # tensorflow-datasets imports it on Python 3.9+ too but declares it only below 3.9.
        "importlib_resources>=6.0",
        "numpy>=1.26",
        "tqdm>=4.66",
        "matplotlib>=3.8",
    ],
    # `memorizing-jax-train` is `python -m memorizing_jax.main`; `memorizing-jax-compile`
    # is `python -m memorizing_jax.compile`; `memorizing-jax-evaluate` is
    # `python -m memorizing_jax.evaluate`.
    entry_points={
        "console_scripts": [
            "memorizing-jax-train = memorizing_jax.main:run",
            "memorizing-jax-compile = memorizing_jax.compile:run",
            "memorizing-jax-evaluate = memorizing_jax.evaluate:run",
        ],
    },
    extras_require={
        # libtpu at the version this jax pins: trains on a TPU VM, and compiles for TPU
        # topologies on any host (python -m memorizing_jax.compile; no TPU needed).
        "tpu": ["jax[tpu]"],
        # CUDA 13 wheels (what JAX's install guide leads with); jax[cuda12] for older drivers.
        "gpu": ["jax[cuda13]"],
        # nbclient, nbformat and ipykernel execute examples/quickstart.ipynb in the tests;
        # jax[tpu] lets the tests compile for TPU topologies; pytest-xdist runs the suite
        # in one process per core (make test).
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "hypothesis>=6.100", "nbclient>=0.10",
                 "nbformat>=5.9", "ipykernel>=6.29", "jax[tpu]"],
    },
)
