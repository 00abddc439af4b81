"""A fix to inductor's CPU code generation (torch 2.13): boolean masks stored at memory speed.

Why: a compiled training step keeps, for its backward, the sign of every leaky ReLU's input as a
bool mask (one byte a value: the partitioner's cheapest thing to save). Inductor's vectorised
kernels store such a mask through `at::vec::VecMask<float, N>::store(bool*, count)`, which converts
through generic 64-lane bool vectors one element at a time, hundreds of cycles for 16 values: the
kernels that store a mask ran many times slower than their arithmetic (the figures: docs/figures.md,
"Sixth round").

`install()` makes the code generator write the same bytes (1 where the mask is set, else 0) from a
float view of the mask with a plain loop; the values and the mask are identical
(tests/test_inductor_masks.py checks a compiled leaky ReLU's mask and gradients against eager ones
and that the fast store is the one in the code). Every other store is left to inductor.
`unstable.compiled` installs it before it compiles.

Inductor keeps generated code on disk (the FX graph cache): the fix is part of the cache key, as
a custom graph pass with its own uuid that changes nothing in the graph, so that code generated
without it is not loaded again.
"""

from __future__ import annotations

import torch

__all__ = ["install", "installed", "FAST_STORE_MARK"]

# A comment in every store the fix writes: how a test (or a person reading generated code) finds it.
FAST_STORE_MARK = "unstable: bool mask store"
VERSION = "unstable-bool-mask-store-1"

_installed = False


def installed() -> bool:
    """Whether `install()` has patched this process's inductor."""
    return _installed


def install() -> None:
    """Patch inductor's CPU vector kernels' bool stores (idempotent; see the module doc)."""
    global _installed
    if _installed:
        return
    import torch._inductor.config as inductor_config
    from torch._inductor.codegen import cpp
    from torch._inductor.custom_graph_pass import CustomGraphPass

    original = cpp.CppVecKernel._get_store_line

    def store_line(self, value, var, index, dtype, accu_store=False):
        tiling_var = self.itervars[self.tiling_idx]
        if dtype != torch.bool or accu_store or self._try_get_const_stride(index, tiling_var) != 1:
            return original(self, value, var, index, dtype, accu_store)
        vectors = self._get_num_vectors(torch.float)
        count = cpp.cexpr_index(self.num_elems)
        code = cpp.IndentedBuffer()
        # The mask as floats (all bits set or clear, VecMask's own representation), then a byte each.
        code.writeline(f"{{ // {FAST_STORE_MARK}")
        with code.indent():
            code.writeline(f"__at_align__ float mask_bits[{self.tiling_factor}];")
            code.writeline(f"at::vec::VectorizedN<float,{vectors}>({value}.template cast<float,{vectors}>())"
                           ".store(mask_bits);")
            code.writeline(f"bool* mask_out = {var} + {cpp.cexpr_index(index)};")
            code.writeline(f"for (int64_t i = 0; i < static_cast<int64_t>({count}); i++)")
            code.writeline("    mask_out[i] = c10::bit_cast<uint32_t>(mask_bits[i]) != 0;")
        code.writeline("}")
        return code

    class _Version(CustomGraphPass):
        """Changes nothing in the graph: its uuid puts the fix into inductor's cache key."""

        def __call__(self, graph) -> None:
            return None

        def uuid(self) -> str:
            return VERSION

    if inductor_config.post_grad_custom_post_pass is not None:
        raise RuntimeError("unstable.inductor_masks: a post-grad custom pass is already set; "
                           "the bool mask fix would replace it")
    cpp.CppVecKernel._get_store_line = store_line
    inductor_config.post_grad_custom_post_pass = _Version()
    _installed = True
