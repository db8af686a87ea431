"""The supervised term that ORPO and SimPO-with-``cpo_alpha`` add on the chosen answers.

TRL computes it as one cross-entropy over all chosen answer tokens of the batch (a token mean, not a
mean of per-example means). A loss returns per-example values whose batch mean is the loss, so each
example carries its share ``−pc·n/ΣLc``: the batch mean of the shares is exactly that token mean.
"""

from __future__ import annotations

import torch

from itool.components import PreferenceBatch


def chosen_nll_shares(batch: PreferenceBatch) -> torch.Tensor:
    """Per example, its share of the token-mean NLL of the batch's chosen answers."""
    chosen = batch.policy_chosen_logps.float()
    return -chosen * len(chosen) / batch.chosen_lengths.sum()
