"""Evaluation of generated audio: FAD (VGGish), FD / KL / IS (PANNs Cnn14), CLAPScore, DAC-style
Mel / STFT distances, PESQ, STOI, SI-SDR, DNSMOS and in-house classifier metrics (top-1, FD, prompt
separation), with JSON / Markdown / HTML reports.

It scores audio files only and never imports ``tokenizer`` or ``generation``. Entry points:
``dashflow eval`` (:mod:`eval.cli`) and :class:`eval.suite.Evaluator`; the metric maths lives in
:mod:`eval.frechet`, :mod:`eval.classifier_metrics`, :mod:`eval.clap`, :mod:`eval.reconstruction`,
:mod:`eval.enhancement` and :mod:`eval.inhouse` (which also trains the in-house classifier).
Nothing is imported here, so ``dashflow --help`` stays fast.
"""
