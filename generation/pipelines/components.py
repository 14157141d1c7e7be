"""Pipeline plumbing: saving and index reading, the text-encoder component, folder resolution.

``PipelineTextEncoder`` makes a frozen :class:`text_encoders.TextEncoder` a diffusers pipeline
component. Its folder holds a small ``config.json`` naming the encoder: the bundled MiniLM
(``"minilm"``) and hub models (``"google/flan-t5-large"``) are saved as that name only (no copy
of 90 MB - 1.3 GB of weights); an encoder loaded from a local folder is copied into
``text_encoder/encoder/`` so the pipeline folder stays self-contained. It always loads in
float32 (UniFlow / Dasheng-AudioGen run Flan-T5 in fp32; it overflows in fp16).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, TypeVar

from dashflow.text_encoders import DEFAULT_TEXT_ENCODER, TextEncoder, load_text_encoder
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from dashflow.errors import DashflowError, first_line
from dashflow.hub import resolve_folder
from dashflow.manifests import read_json
from dashflow.outputs import atomic_path

CONFIG_NAME = "config.json"
COPY_FOLDER = "encoder"  # where a local-folder encoder is copied inside the component folder
# files a Hugging Face encoder folder needs (weights, configs, tokenizer); pickles never travel
COPY_SUFFIXES = (".json", ".safetensors", ".txt", ".model")




Loaded = TypeVar("Loaded")


def load_guarded(load: Callable[[], Loaded], folder: Path) -> Loaded:
    """Run diffusers' pipeline loader ``load``; its failures become one DashflowError line."""
    try:
        with warnings.catch_warnings():  # diffusers >= 0.36 prefers `dtype`; older ones only know this
            warnings.filterwarnings("ignore", message=".*torch_dtype.* is deprecated", category=FutureWarning)
            return load()
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        raise DashflowError(f"{folder}: cannot load the pipeline ({first_line(exc)})") from exc


ENTRY_FILE = "pipeline"  # <folder>/pipeline.py: what diffusers' generic loader imports
CODEC_COMPONENT, CODEC_LIBRARY = "tokenizer", "dashflow.codecs"  # any codec, through the codec registry


class DashflowPipelineMixin:
    """Saving and index reading shared by the dashflow pipelines (mixed into DiffusionPipeline).

    ``save_pretrained`` records every component class in ``own_components`` under
    ``dashflow.generation.pipelines`` (which re-exports them) and the codec (``tokenizer``, any
    registered :class:`dashflow.codecs.LatentCodec`) under ``dashflow.codecs``, and makes the folder open with
    diffusers' generic loader: ``model_index.json`` names ``["pipeline", <class>]`` and a one-line
    ``pipeline.py`` imports the class from the installed package, so
    ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` returns this class
    (diffusers asks ``trust_remote_code`` for any pipeline.py). The class's own ``from_pretrained``
    never runs that file: it reads the class name and uses itself.
    """

    own_components: ClassVar[tuple[type, ...]] = ()
    trained_component: ClassVar[str] = "transformer"  # the component a recipe trains

    def compile(self, mode: str | None = None) -> None:
        """``torch.compile`` the trained network's backbone in place (mode default:
        ``reduce-overhead``, i.e. CUDA graphs, on CUDA; ``default`` elsewhere). The first call of
        each shape compiles (slow); later ones reuse it. Weights and saving are unchanged."""
        model = getattr(self, self.trained_component)
        network = getattr(model, "backbone", model)
        cuda = next(network.parameters()).device.type == "cuda"
        network.compile(mode=mode or ("reduce-overhead" if cuda else "default"), dynamic=False)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        package = __package__  # dashflow.generation.pipelines
        for name, component in self.components.items():
            if name == CODEC_COMPONENT:
                self.register_to_config(**{name: (CODEC_LIBRARY, type(component).__name__)})
            elif type(component) in self.own_components:
                self.register_to_config(**{name: (package, type(component).__name__)})
        super().save_pretrained(save_directory, **kwargs)
        folder, name = Path(save_directory), type(self).__name__
        with atomic_path(folder / f"{ENTRY_FILE}.py") as tmp:
            tmp.write_text(f'"""Opens this folder with diffusers\' DiffusionPipeline (needs dashflow installed)."""\n\n'
                           f"from {package} import {name}  # noqa: F401\n")
        index = read_json(folder / "model_index.json") | {"_class_name": [ENTRY_FILE, name]}
        with atomic_path(folder / "model_index.json") as tmp:
            tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load_config(cls, *args, **kwargs):
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        config["_class_name"] = index_class_name(config)
        return loaded


def index_class_name(index: dict) -> str | None:
    """The pipeline class a ``model_index.json`` names (plain, or ``[file, class]``)."""
    name = index.get("_class_name")
    return name[-1] if isinstance(name, (list, tuple)) else name


def resolve_checkpoint(name: str | os.PathLike, what: str = "checkpoint") -> Path:
    """A local folder, or a Hugging Face repo id (``owner/name``) downloaded into the hub cache."""
    return resolve_folder(name, what, ("*.json", "*.safetensors", "*.txt", "*.model"))


class PipelineTextEncoder(ModelMixin, ConfigMixin):
    """A frozen :class:`TextEncoder` as a pipeline component, saved by reference (see module doc).

    ``encode(prompts) -> (embeddings [B, L, D] float32, mask [B, L] bool)``; ``dim``, ``name``
    and ``weights_hash()`` are the wrapped encoder's. ``PipelineTextEncoder("minilm")`` loads by
    name; ``PipelineTextEncoder.wrap(encoder)`` adopts an encoder already loaded.
    """

    config_name = CONFIG_NAME
    ignore_for_config: ClassVar[list[str]] = ["encoder"]

    @register_to_config
    def __init__(self, name: str = DEFAULT_TEXT_ENCODER, encoder: TextEncoder | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else load_text_encoder(name)

    @classmethod
    def wrap(cls, encoder: TextEncoder) -> PipelineTextEncoder:
        return cls(name=encoder.name, encoder=encoder)

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def encode(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """prompts -> embeddings [B, L, D] float32 (zero at padding), mask [B, L] bool."""
        return self.encoder.encode(prompts)

    def weights_hash(self) -> str:
        return self.encoder.weights_hash()

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True,
                        **_diffusers_kwargs) -> None:
        """Write ``config.json`` (the encoder's name); copy a local-folder encoder's files."""
        if not is_main_process:
            return
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        name = self.encoder.name
        source = Path(name).expanduser()
        if source.is_dir():
            target = folder / COPY_FOLDER
            if source.resolve() != target.resolve():
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir()
                for file in sorted(source.iterdir()):
                    if file.is_file() and file.suffix in COPY_SUFFIXES:
                        shutil.copy2(file, target / file.name)
            name = COPY_FOLDER
        config = {"_class_name": type(self).__name__, "name": name, "dim": self.dim}
        with atomic_path(folder / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None,
                        **_diffusers_kwargs) -> PipelineTextEncoder:
        """Read ``config.json`` and load the named encoder (float32; ``torch_dtype`` is ignored)."""
        folder = Path(pretrained_model_name_or_path)
        folder = folder / subfolder if subfolder else folder
        config = read_json(folder / CONFIG_NAME)
        name = config.get("name")
        if not isinstance(name, str) or not name:
            raise DashflowError(f"{folder / CONFIG_NAME}: no text encoder 'name'")
        local = folder / name
        encoder = load_text_encoder(local if name == COPY_FOLDER or local.is_dir() else name)
        expected = config.get("dim")
        if expected is not None and expected != encoder.dim:
            raise DashflowError(f"{folder}: text encoder {name!r} gives {encoder.dim}-d states but the "
                                f"pipeline was saved with a {expected}-d one")
        return cls(name=name, encoder=encoder)
