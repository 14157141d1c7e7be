"""Pipeline plumbing: the shared base of the pipelines (loading guards, saving, seeding, dtype
casts), the text-encoder component, folder resolution.

``PipelineTextEncoder`` makes a frozen :class:`text_encoders.TextEncoder` a diffusers pipeline
component. Its folder holds a small ``config.json`` naming the encoder: the bundled MiniLM
(``"minilm"``) and hub models (``"google/flan-t5-large"``) are saved as that name only (no copy
of 90 MB - 1.3 GB of weights); an encoder loaded from a local folder is copied into
``text_encoder/encoder/`` so the pipeline folder stays self-contained. It always loads in
float32 (UniFlow / Dasheng-AudioGen run Flan-T5 in fp32; it overflows in fp16).
"""

from __future__ import annotations

import contextlib
import filecmp
import importlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from dashflow.generation.pipelines.tasks import TASKS
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
PIPELINE_INDEX = "model_index.json"
SHARED_NAMES = {"enhancer": "transformer"}  # a task pipeline's component -> its folder in a multi-task folder
# diffusers' ModelMixin.to notes "modules that should be kept in float32: []" on every dtype cast,
# even when a model keeps none (ours keep none)
EMPTY_FP32_NOTE = "should be kept in float32: []"

Loaded = TypeVar("Loaded")


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' weight-loading bars and notices off while components load (restored after)."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextmanager
def dropped_log_messages(logger_name: str, text: str) -> Iterator[None]:
    """Inside the block, records of ``logger_name`` that contain ``text`` are not emitted."""
    logger, drop = logging.getLogger(logger_name), _DropMessage(text)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def load_guarded(load: Callable[[], Loaded], folder: Path) -> Loaded:
    """Run diffusers' pipeline loader ``load`` quietly; its failures become one DashflowError line."""
    try:
        with warnings.catch_warnings(), quiet_loading():  # diffusers >= 0.36 prefers `dtype`
            warnings.filterwarnings("ignore", message=".*torch_dtype.* is deprecated", category=FutureWarning)
            return load()
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        raise DashflowError(f"{folder}: cannot load the pipeline ({first_line(exc)})") from exc


def seeded_generators(count: int, generator: torch.Generator | list[torch.Generator] | None,
                      seed: int | Sequence[int] | None) -> tuple[Any, list[int] | None]:
    """The generators of ``count`` items and their seeds: ``seed`` (item i draws from ``seed + i``,
    or one seed per item) or ``generator`` (one, or one per item; seeds then unknown: None)."""
    if seed is not None and generator is not None:
        raise DashflowError("pass seed or generator, not both")
    if seed is None:
        if isinstance(generator, (list, tuple)) and len(generator) != count:
            raise DashflowError(f"{len(generator)} generators for {count} items")
        return generator, None
    seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed + i for i in range(count)] \
        if isinstance(seed, int) and not isinstance(seed, bool) else None
    if seeds is None or len(seeds) != count or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise DashflowError(f"seed must be an int or {count} ints, got {seed!r}")
    return [torch.Generator("cpu").manual_seed(s) for s in seeds], seeds


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
    task: ClassVar[str] = ""  # the task registry's name of the pipeline
    trained_component: ClassVar[str] = "transformer"  # the component a recipe trains
    folder_kind: ClassVar[str] = "pipeline"  # what error messages call the folder

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, torch_dtype: torch.dtype | None = None,
                        **kwargs):
        """Load a saved pipeline folder or hub id (``torch_dtype`` default float32; the text encoder
        stays float32). Components passed as keyword arguments replace the stored ones. Every
        failure is one DashflowError line; transformers' loading bars stay off."""
        folder = task_folder(resolve_checkpoint(pretrained_model_name_or_path, cls.folder_kind), cls.task)
        if not (folder / PIPELINE_INDEX).is_file():
            return cls.from_folder_without_index(folder, torch_dtype=torch_dtype, **kwargs)
        torch_dtype = torch_dtype or torch.float32
        components = index_components(read_json(folder / PIPELINE_INDEX))
        shared = {}  # the components a multi-task folder keeps once, beside the task folders
        for name in components:
            if name not in kwargs and not (folder / name).is_dir():
                shared[name] = folder.parent / SHARED_NAMES.get(name, name)
                if not shared[name].is_dir():
                    raise DashflowError(f"{folder}: component folder {name}/ is missing")
        pipeline = load_guarded(lambda: super(DashflowPipelineMixin, cls).from_pretrained(
            str(folder), torch_dtype=torch_dtype, **kwargs,
            **{name: load_component(components[name], path, torch_dtype) for name, path in shared.items()}), folder)
        if not isinstance(pipeline, cls):
            raise DashflowError(f"{folder}: holds a {type(pipeline).__name__}, not a {cls.__name__}")
        return pipeline

    @classmethod
    def from_folder_without_index(cls, folder: Path, torch_dtype: torch.dtype | None = None, **kwargs):
        """What a folder without ``model_index.json`` loads as (a subclass may know one kind)."""
        raise DashflowError(f"{folder}: not a pipeline folder (no {PIPELINE_INDEX})")

    def to(self, *args, **kwargs):
        """diffusers' ``to`` (device and / or dtype for every component), without the note about
        float32 modules that diffusers prints on every cast although these models keep none."""
        with dropped_log_messages("diffusers.models.modeling_utils", EMPTY_FP32_NOTE):
            return super().to(*args, **kwargs)

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
        # every pipeline class, the same file in every folder: diffusers imports each folder's
        # pipeline.py as one cached module, so one process opening two kinds of folder needs both
        classes = ", ".join(sorted(task.class_name for task in TASKS.values()))
        with atomic_path(folder / f"{ENTRY_FILE}.py") as tmp:
            tmp.write_text(f'"""Opens this folder with diffusers\' DiffusionPipeline (needs dashflow installed)."""\n\n'
                           f"from {package} import {classes}  # noqa: F401\n")
        index = read_json(folder / PIPELINE_INDEX) | {"_class_name": [ENTRY_FILE, name]}
        index.pop("_name_or_path", None)  # where it was loaded from on the saving machine: not portable
        with atomic_path(folder / PIPELINE_INDEX) as tmp:
            tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load_config(cls, *args, **kwargs):
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        config["_class_name"] = index_class_name(config)
        return loaded


def save_task_pipelines(pipelines: dict[str, DashflowPipelineMixin], folder: Path) -> None:
    """Save one pipeline per task as a multi-task folder: ``folder/<task>/`` holds the task's
    ``model_index.json`` (class, instruction, settings) and any component no other task shares;
    a component the tasks share byte for byte (the DiT, tokenizer, ...) is stored once, as
    ``folder/<name>/`` (the se pipeline's ``enhancer`` as ``transformer``), and linked into each
    task folder by a relative symlink, so diffusers' generic loader opens a task folder too (our
    loader also reads a checkout without symlinks). Replaces what ``folder`` held."""
    shutil.rmtree(folder, ignore_errors=True)
    for task, pipeline in pipelines.items():
        pipeline.save_pretrained(folder / task)
    for task in pipelines:
        for name in index_components(read_json(folder / task / PIPELINE_INDEX)):
            component, shared = folder / task / name, folder / SHARED_NAMES.get(name, name)
            if not shared.exists():
                component.rename(shared)
            elif same_files(component, shared):
                shutil.rmtree(component)
            else:
                continue
            with contextlib.suppress(OSError):  # a file system without symlinks: the shared folder alone
                component.symlink_to(Path("..") / shared.name, target_is_directory=True)


def weights_on_disk(folder: Path) -> int:
    """Bytes of the safetensors files under ``folder``, each stored file counted once (a task
    folder's symlinked components, hard links)."""
    files = {(stat.st_dev, stat.st_ino): stat.st_size for stat in (p.stat() for p in folder.rglob("*.safetensors"))}
    return sum(files.values())


def same_files(first: Path, second: Path) -> bool:
    """Whether two folders hold the same file names with the same bytes."""
    names = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    return names == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file()) and all(
        filecmp.cmp(first / name, second / name, shallow=False) for name in names)


def index_components(index: dict) -> dict[str, list]:
    """The components a ``model_index.json`` stores (name -> [library, class]), absent optional ones left out."""
    return {name: entry for name, entry in index.items()
            if not name.startswith("_") and isinstance(entry, list) and entry and entry[0] is not None}


def load_component(entry: list, folder: Path, torch_dtype: torch.dtype) -> Any:
    """The component ``entry`` ([library, class] of a ``model_index.json``) saved in ``folder``."""
    component_class = getattr(importlib.import_module(entry[0]), entry[1])
    dtype = {"torch_dtype": torch_dtype} if issubclass(component_class, ModelMixin) else {}  # not schedulers
    return component_class.from_pretrained(folder, **dtype)


def task_folder(folder: Path, task: str) -> Path:
    """``folder/<task>`` when ``folder`` is a multi-task folder (see :func:`save_task_pipelines`)
    and holds that task; else ``folder``."""
    if not (folder / PIPELINE_INDEX).is_file() and task and (folder / task / PIPELINE_INDEX).is_file():
        return folder / task
    return folder


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
        if encoder is None:
            with quiet_loading():
                encoder = load_text_encoder(name)
        self.encoder = encoder

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
        with quiet_loading():
            encoder = load_text_encoder(local if name == COPY_FOLDER or local.is_dir() else name)
        expected = config.get("dim")
        if expected is not None and expected != encoder.dim:
            raise DashflowError(f"{folder}: text encoder {name!r} gives {encoder.dim}-d states but the "
                                f"pipeline was saved with a {expected}-d one")
        return cls(name=name, encoder=encoder)
