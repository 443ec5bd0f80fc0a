"""Test-wide settings: one torch thread (tiny models; avoids oversubscribing 2 cores)."""

import torch

torch.set_num_threads(1)
