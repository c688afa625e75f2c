"""``python -m lab bench``: how fast the lab is, against what, where the hardware limit is, and how it grows.

Everything is measured in one run, on the same model and the same items both ways, with the peak memory
beside every time (:mod:`.measure`):

1. The batched engine against per-example loops (one forward or one ``generate`` per example, no padding):
   answer scoring, greedy generation and REMIND neighbor losses (:mod:`.loops`).
2. Against the tools a user would pick instead: multiple-choice scoring against lm-evaluation-harness's
   ``HFLM`` (:mod:`.lm_eval_peer`), greedy generation against open-unlearning's batch-32 ``model.generate``
   loop (:mod:`.loops`).  Results must be identical; the speed is their time over ours.
3. Against the hardware: the batched scoring pass's achieved FLOP/s as a share of this machine's matmul
   peak, measured in the same run, dtype and thread count; on CUDA also the MFU of a 1B-shaped model
   (:mod:`.hardware`).
4. As work grows: the five-attack suite at 1x, 2x and 4x the facts, and the scoring pass of random Llama
   shapes of about 1M, 10M and 100M parameters, each with its growth exponent (:mod:`.scaling`).
5. On realistic shapes (full bench and ``--realistic``, not ``--quick``): random-init models with the 32k-256k
   vocabularies and tokenizer kinds of Llama-2, Llama-3, Qwen2.5 and Gemma-2 and with Llama-3.2-1B's width,
   against lm-eval (multiple choice and multi-token log-likelihood) and the batch-32 generate loop
   (:mod:`.shapes`).

:mod:`.run` drives it and :mod:`.report` prints the tables, each target with whether this run met it.
"""

from lab.shell.bench.run import FULL, QUICK, Sizes, demo_for, run_bench

__all__ = ["FULL", "QUICK", "Sizes", "demo_for", "run_bench"]
