"""The decode cache layer: rows laid side by side, padded on the left, dropped in place."""

from __future__ import annotations

import torch

from itool.plugins.backends.kv_cache import GrowingLayer


def rows_of(width: int, rows: int, fill: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    keys = torch.full((rows, 2, width, 4), fill) + torch.arange(rows)[:, None, None, None]
    return keys, -keys, width


def test_side_by_side_left_pads_each_part_with_zeros_and_repeats_the_rows_asked_for():
    layer = GrowingLayer.side_by_side([rows_of(3, 2, 10.0), rows_of(5, 1, 20.0)], width=5, coming=2,
                                      rows=[0, 0, 2, 1])
    assert layer.keys.shape == (4, 2, 5, 4)
    assert (layer.keys[:2, :, :2] == 0).all() and (layer.keys[:2, :, 2:] == 10.0).all()
    assert (layer.keys[2] == 20.0).all() and (layer.keys[3, :, 2:] == 11.0).all()
    assert torch.equal(layer.values, -layer.keys)


def test_new_positions_are_written_after_the_old_and_the_buffer_grows_when_full():
    layer = GrowingLayer.side_by_side([rows_of(2, 2, 1.0)], width=2)
    room = layer._keys.shape[2]
    for step in range(room):
        keys, _ = layer.update(torch.full((2, 2, 1, 4), float(step)), torch.zeros((2, 2, 1, 4)))
    assert keys.shape[2] == room + 2 and layer._keys.shape[2] > room
    assert (keys[:, :, :2] >= 1.0).all() and (keys[:, :, -1] == room - 1).all()


def test_dropping_rows_moves_the_later_ones_up_in_the_same_buffer():
    layer = GrowingLayer.side_by_side([rows_of(3, 4, 0.0)], width=3)
    buffer = layer._keys.data_ptr()
    layer.batch_select_indices(torch.tensor([1, 3]))
    assert layer._keys.data_ptr() == buffer
    assert layer.keys.shape[0] == 2 and (layer.keys[0] == 1.0).all() and (layer.keys[1] == 3.0).all()
    keys, _ = layer.update(torch.full((2, 2, 1, 4), 7.0), torch.zeros((2, 2, 1, 4)))
    assert keys.shape == (2, 2, 4, 4) and (keys[:, :, -1] == 7.0).all()


def test_repeating_or_reordering_rows_copies_them():
    layer = GrowingLayer.side_by_side([rows_of(3, 2, 0.0)], width=3)
    layer.batch_select_indices(torch.tensor([1, 0, 0]))
    assert [int(layer.keys[r, 0, 0, 0]) for r in range(3)] == [1, 0, 0]
