"""A trained policy written back as a GGUF file, so that llama.cpp can serve it (``launch_format=gguf``).

llama.cpp reads only GGUF. The policy was loaded from a GGUF (the bundled SmolLM2 one by default), and
training changes weights, not the architecture or the tokenizer: the new file takes every metadata field
of that source file (hyper-parameters, vocabulary, chat template) and the policy's current weights in
float32, under the source's tensor names. transformers un-permuted the query and key projections of
llama-family models when it read the GGUF (``LlamaTensorProcessor``); they are permuted back here the
way llama.cpp's converter does.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from itool.errors import ItoolError


def _permute(weights: Any, heads: int) -> Any:
    """llama.cpp's rotary layout for a query/key projection: the inverse of transformers' reverse permute."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


@functools.cache
def _source(path: Path) -> tuple[str, list[tuple[str, Any, Any, Any]], list[str]]:
    """(architecture, metadata fields as (name, value, type, sub-type), tensor names) of a GGUF file,
    read once per process: gguf's reader takes ~30 s over a 49k-token vocabulary on a 2-core CPU."""
    import gguf

    reader = gguf.GGUFReader(path)
    fields = []
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        fields.append((field.name, field.contents(), value_type, sub_type))
    return reader.fields[gguf.Keys.General.ARCHITECTURE].contents(), fields, [t.name for t in reader.tensors]


def write_gguf(model: Any, source: Path, target: Path) -> None:
    """Write ``model``'s weights into ``target`` with the metadata and tensor names of ``source``."""
    import gguf
    import numpy

    architecture, fields, tensor_names = _source(Path(source).resolve())
    config = model.config
    if getattr(config, "model_type", None) != architecture:
        raise ItoolError(f"launch_format=gguf: the policy is a {config.model_type!r} model, the GGUF {source} "
                         f"holds {architecture!r}")
    arch = next(key for key, name in gguf.MODEL_ARCH_NAMES.items() if name == architecture)
    name_map = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    state = model.state_dict()
    by_gguf_name = {}
    for hf_name in state:
        stem, _, suffix = hf_name.rpartition(".")
        gguf_name = name_map.get_name(stem)
        if gguf_name is not None:
            by_gguf_name[f"{gguf_name}.{suffix}"] = hf_name
    writer = gguf.GGUFWriter(target, architecture)
    for name, value, value_type, sub_type in fields:
        if name == gguf.Keys.General.FILE_TYPE:
            writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        else:
            writer.add_key_value(name, value, value_type, sub_type=sub_type)
    for tensor_name in tensor_names:
        hf_name = by_gguf_name.get(tensor_name)
        if hf_name is None:
            raise ItoolError(f"launch_format=gguf: no weight of the policy matches tensor {tensor_name!r} of {source}")
        weights = state[hf_name].detach().float().cpu().numpy()
        if architecture == "llama" and ".attn_q." in tensor_name:
            weights = _permute(weights, config.num_attention_heads)
        elif architecture == "llama" and ".attn_k." in tensor_name:
            weights = _permute(weights, config.num_key_value_heads)
        writer.add_tensor(tensor_name, numpy.ascontiguousarray(weights, dtype=numpy.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
