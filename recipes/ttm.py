"""Train the text-to-music DiT: the text-to-audio recipe (``recipes/tta.py``) on music data.

    accelerate launch recipes/ttm.py --config recipes/configs/ttm/paper.yaml \\
        data.train=musiccaps/train.jsonl model.tokenizer=TOKENIZER_DIR [dotted.key=value ...]

Model, objective, loop, checkpoints and logs are those of ``tta.py``; the configs under
``recipes/configs/ttm`` set the music instruction, prompts and data. The trained model is
exported as a TextToMusicPipeline to ``<output_dir>/final/{raw,ema}``.
"""

import runpy
import sys
from pathlib import Path

from dashflow.cli import run_guarded

if __name__ == "__main__":
    recipe = runpy.run_path(str(Path(__file__).with_name("tta.py")), run_name="tta_recipe")
    sys.exit(run_guarded(lambda: recipe["main"](name="ttm")))
