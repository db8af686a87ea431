"""A key/value cache layer for batched decoding on CPU (imported lazily: it needs transformers)."""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A cache layer that writes new keys/values into spare room instead of concatenating.

    ``DynamicLayer`` concatenates, i.e. copies every row's whole cache at every decoded token: measured
    on the 2-core CPU at 48 rows × 400 tokens that was over a third of a decode step. Here ``keys`` and
    ``values`` are views of the first ``_rows`` rows and ``_used`` positions of a buffer that grows by a
    quarter whenever it is full. Every fresh buffer costs page faults on first touch (about 2 GB/s here,
    slower than the copy itself), so rows that leave the batch are compacted in place.
    """

    @classmethod
    def side_by_side(cls, parts: list[tuple[Any, Any, int]], width: int, coming: int = 0,
                     rows: list[int] | None = None) -> "GrowingLayer":
        """One layer holding the parts' rows, left-padded (with zeros, masked out) to ``width``, with room
        for ``coming`` more positions and then the usual spare. ``rows``: which rows, counted across the
        parts in order, make up the layer (repeats allowed); default all, in order.

        Only the padding is zeroed (masked keys must still be finite, or attention gives NaN): the room
        beyond ``width`` is written before it is exposed."""
        sources = [(keys[j], values[j], part_width) for keys, values, part_width in parts for j in range(keys.shape[0])]
        rows = list(range(len(sources))) if rows is None else rows
        keys, values, _ = parts[0]
        layer = cls()
        layer.dtype, layer.device, layer.is_initialized = keys.dtype, keys.device, True
        layer._rows, layer._used = len(rows), width
        layer._keys = keys.new_empty((len(rows), keys.shape[1], width + coming + max(64, width // 4), keys.shape[3]))
        layer._values = values.new_empty((len(rows), values.shape[1], layer._keys.shape[2], values.shape[3]))
        for row, source in enumerate(rows):
            row_keys, row_values, part_width = sources[source]
            for buffer, data in ((layer._keys[row], row_keys), (layer._values[row], row_values)):
                buffer[:, : width - part_width] = 0
                buffer[:, width - part_width: width] = data
        layer._expose()
        return layer

    def _expose(self) -> None:
        self.keys = self._keys[: self._rows, :, : self._used]
        self.values = self._values[: self._rows, :, : self._used]

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        end = self._used + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            room = end + max(64, end // 4)
            grown_keys = self._keys.new_empty((self._rows, self._keys.shape[1], room, self._keys.shape[3]))
            grown_values = self._values.new_empty((self._rows, self._values.shape[1], room, self._values.shape[3]))
            grown_keys[:, :, : self._used] = self.keys
            grown_values[:, :, : self._used] = self.values
            self._keys, self._values = grown_keys, grown_values
        self._keys[: self._rows, :, self._used: end] = key_states
        self._values[: self._rows, :, self._used: end] = value_states
        self._used = end
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: Any) -> None:
        """Keep the rows ``indices``: in place when they only drop rows (ascending, no repeats), else copied
        with ``index_select`` (3× faster than ``keys[indices]`` on these 4-d buffers)."""
        kept = indices.tolist()
        if all(a < b for a, b in zip(kept, kept[1:])):
            for row, source in enumerate(kept):
                if row != source:  # source > row: a later row moves up, over a dropped one
                    self._keys[row, :, : self._used] = self._keys[source, :, : self._used]
                    self._values[row, :, : self._used] = self._values[source, :, : self._used]
        else:
            self._keys = self._keys[: self._rows].index_select(0, indices)
            self._values = self._values[: self._rows].index_select(0, indices)
        self._rows = len(kept)
        self._expose()
