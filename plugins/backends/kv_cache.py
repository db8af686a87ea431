"""A key/value cache layer for batched decoding on CPU (imported lazily: it needs transformers)."""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A cache layer that writes new keys/values into spare room instead of concatenating.

    ``DynamicLayer`` concatenates, i.e. copies every row's whole cache at every decoded token: measured
    on the 2-core CPU at 48 rows × 400 tokens that was over a third of a decode step. Here ``keys`` and
    ``values`` are views of a buffer that grows by a quarter whenever it is full.
    """

    @classmethod
    def side_by_side(cls, parts: list[tuple[Any, Any, int]], width: int, coming: int = 0) -> "GrowingLayer":
        """One layer holding each part's rows, left-padded (with zeros, masked out) to ``width``, with room
        for ``coming`` more positions and then the usual spare."""
        keys, values, _ = parts[0]
        layer = cls()
        layer.dtype, layer.device, layer.is_initialized = keys.dtype, keys.device, True
        rows = sum(k.shape[0] for k, _, _ in parts)
        layer._used = width
        layer._keys = keys.new_zeros((rows, keys.shape[1], width + coming + max(64, width // 4), keys.shape[3]))
        layer._values = values.new_zeros((rows, values.shape[1], layer._keys.shape[2], values.shape[3]))
        start = 0
        for part_keys, part_values, part_width in parts:
            end = start + part_keys.shape[0]
            layer._keys[start:end, :, width - part_width: width] = part_keys
            layer._values[start:end, :, width - part_width: width] = part_values
            start = end
        layer._expose()
        return layer

    def _expose(self) -> None:
        self.keys, self.values = self._keys[:, :, : self._used], self._values[:, :, : self._used]

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        end = self._used + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            room = end + max(64, end // 4)
            grown_keys = self._keys.new_zeros((*self._keys.shape[:2], room, self._keys.shape[3]))
            grown_values = self._values.new_zeros((*self._values.shape[:2], room, self._values.shape[3]))
            grown_keys[:, :, : self._used] = self.keys
            grown_values[:, :, : self._used] = self.values
            self._keys, self._values = grown_keys, grown_values
        self._keys[:, :, self._used: end] = key_states
        self._values[:, :, self._used: end] = value_states
        self._used = end
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: Any) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._expose()
