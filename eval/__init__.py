"""Evaluation of generated audio: FAD (VGGish), FD / KL / IS (PANNs Cnn14), CLAPScore, DAC-style
Mel / STFT distances, PESQ, STOI, SI-SDR and DNSMOS, with JSON / Markdown / HTML reports.

It scores audio files only and never imports ``tokenizer`` or ``generation``. Entry points:
``dashflow eval`` (:mod:`eval.cli`) and :class:`eval.suite.Evaluator`; the metric maths lives in
:mod:`eval.frechet`, :mod:`eval.classifier_metrics`, :mod:`eval.clap`, :mod:`eval.reconstruction`
and :mod:`eval.enhancement`. Nothing is imported here, so ``dashflow --help`` stays fast.
"""
