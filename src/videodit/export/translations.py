"""How some torch ops become ONNX: translations that replace torchlib's where onnxruntime's CPU kernels are much
faster on another form of the same math. `export_bundle` exports every graph with `TRANSLATIONS`.

- The VAE's (1, 2, 2) nearest upsample of a 5-D tensor becomes a 4-D Resize.
- Scaled dot-product attention becomes onnxruntime's fused `com.microsoft.MultiHeadAttention` on [B, N, dim]
  queries, keys and values. The DiT splits heads from each projection (`videodit.models.dit.split_heads`), so the
  head transposes before and after it cancel in export's graph optimization: the DiT step's Transposes go from 22
  to 2 (patchify and unpatchify), its nodes from 336 to 338 (the Reshapes that stay are free).
- GroupNorm becomes InstanceNormalization over [N, groups, -1]: onnxruntime has no CPU kernel for ONNX's
  GroupNormalization and runs its function body, seven element-wise passes over the decoder's largest tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import onnx
import onnx_ir as ir
import onnxscript
import torch
from onnx.defs import OpSchema
from onnxscript import INT64
from onnxscript import opset23 as op
from onnxscript.function_libs.torch_lib.ops.nn import (
    aten_group_norm, aten_scaled_dot_product_attention, aten_upsample_nearestnd_vec,
)  # fmt: skip
from onnxscript.function_libs.torch_lib.tensor_typing import TFloat, TReal

MICROSOFT = "com.microsoft"
MULTI_HEAD_ATTENTION = "MultiHeadAttention"


def _register_multi_head_attention() -> onnxscript.values.Opset:
    """onnxruntime's contrib MultiHeadAttention, declared to ONNX's schema registry (ONNX does not know contrib
    ops, and the exporter builds nodes from schemas): the inputs and attributes used here, as onnxruntime's
    ContribOperators.md documents them."""
    if not onnx.defs.has(MULTI_HEAD_ATTENTION, MICROSOFT):
        param, optional = OpSchema.FormalParameter, OpSchema.FormalParameterOption.Optional
        onnx.defs.register_schema(OpSchema(
            MULTI_HEAD_ATTENTION, MICROSOFT, 1,
            inputs=[param("query", "T"), param("key", "T"), param("value", "T"),
                    param("bias", "T", param_option=optional), param("key_padding_mask", "M", param_option=optional),
                    param("attention_bias", "T", param_option=optional)],
            outputs=[param("output", "T")],
            type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("M", ["tensor(int32)"], "")],
            attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "heads"),
                        OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, "scale of Q·K", required=False)],
        ))  # fmt: skip
    return onnxscript.values.Opset(MICROSOFT, 1)


CONTRIB = _register_multi_head_attention()


def upsample_nearest_per_frame(
    input: TReal, output_size: Optional[INT64] = None, scale_factors: Optional[Sequence[float]] = None
) -> TReal:
    """The VAE's (1, 2, 2) nearest upsample of [B, C, T, H, W] as one 4-D Resize of [1, B*C*T, H, W].

    onnxruntime's CPU Resize takes a generic path for 5-D tensors that costs 40x its 4-D kernel (15 ms against
    0.3 ms at [2, 32, 5, 32, 32]), while torch is fast on 5-D and slow on the 4-D view: so the model keeps 5-D
    and only its ONNX translation changes. Other nearest upsamples keep torchlib's translation.
    """
    if output_size is not None or scale_factors is None or scale_factors[0] != 1.0:
        return aten_upsample_nearestnd_vec(input, output_size, scale_factors)
    frames = op.Shape(input, start=0, end=3)
    per_frame = op.Reshape(input, op.Concat(op.Constant(value_ints=[1, -1]), op.Shape(input, start=3), axis=0))
    upsampled = op.Resize(
        per_frame, None, op.Constant(value_floats=[1.0, 1.0, *scale_factors[1:]]), None,
        mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor",
    )  # fmt: skip
    return op.Reshape(upsampled, op.Concat(frames, op.Shape(upsampled, start=2), axis=0))


def attention_as_multi_head_attention(
    query: TFloat, key: TFloat, value: TFloat, attn_mask: Optional[TFloat] = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = False,
) -> TFloat:  # fmt: skip
    """SDPA of [B, heads, N, head_dim] tensors as MultiHeadAttention of their [B, N, dim] forms; a boolean mask
    [B, 1, N, L] (True = attend) becomes its additive attention bias. Causal, dropout, grouped-query or
    symbolic-head attention keeps torchlib's translation."""
    heads = query.shape[1]
    if is_causal or dropout_p or enable_gqa or not isinstance(heads, int):
        return aten_scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    merged = op.Constant(value_ints=[0, 0, -1])
    q, k, v = (op.Reshape(op.Transpose(x, perm=[0, 2, 1, 3]), merged) for x in (query, key, value))
    attributes = {"num_heads": heads} | ({} if scale is None else {"scale": scale})
    if attn_mask is not None and attn_mask.dtype == ir.DataType.BOOL:
        attn_mask = op.Where(attn_mask, op.Constant(value_float=0.0), op.Constant(value_float=-math.inf))
    # Inputs: query, key, value, bias, key_padding_mask, attention_bias; trailing Nones are left out of the node.
    out = CONTRIB.MultiHeadAttention(q, k, v, None, None, attn_mask, **attributes)
    return op.Transpose(op.Reshape(out, op.Constant(value_ints=[0, 0, heads, -1])), perm=[0, 2, 1, 3])


TRANSLATIONS = {
    torch.ops.aten.upsample_nearest3d.vec: upsample_nearest_per_frame,
    torch.ops.aten.scaled_dot_product_attention.default: attention_as_multi_head_attention,
    torch.ops.aten.group_norm.default: aten_group_norm,  # onnxscript's InstanceNormalization form
}
