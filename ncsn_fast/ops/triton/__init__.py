"""Triton kernels of ncsn-fast, exposed as torch custom ops through torch.library.triton_op (torch.compile sees
through them). Imported only when triton is installed."""
