"""Evaluation of generated audio: FAD (VGGish), FD / KL / IS (PANNs Cnn14), CLAPScore, DAC-style
Mel / STFT distances, PESQ, STOI, SI-SDR, DNSMOS and in-house classifier metrics (top-1, FD, prompt
separation), with JSON / Markdown / HTML reports.

It scores audio files only and never imports ``dashflow.tokenizer`` or ``dashflow.generation``. Entry points:
``dashflow eval`` (:mod:`dashflow.eval.cli`) and :class:`dashflow.eval.suite.Evaluator`; the metric maths lives in
:mod:`dashflow.eval.frechet`, :mod:`dashflow.eval.classifier_metrics`, :mod:`dashflow.eval.clap`, :mod:`dashflow.eval.reconstruction`,
:mod:`dashflow.eval.enhancement` and :mod:`dashflow.eval.inhouse` (which also trains the in-house classifier).
Nothing is imported here, so ``dashflow --help`` stays fast.
"""
