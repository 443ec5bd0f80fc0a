from __future__ import annotations

import numpy as np

from crypto.ckks import CKKSParameters, SecretCKKSContext, decrypt_chunks
from crypto.ckks.parallel import CKKSWorkerPool

PARAMS = CKKSParameters(poly_modulus_degree=4096, coeff_mod_bit_sizes=(50, 59), scale_bits=39)


def test_worker_pool_encrypts_like_the_serial_path() -> None:
    secret = SecretCKKSContext.generate(PARAMS)
    rng = np.random.default_rng(3)
    xs = [rng.uniform(-1, 1, size=(3, PARAMS.slots)) for _ in range(2)]
    with CKKSWorkerPool(secret.public(), workers=2) as pool:
        uploads = [pool.encrypt(x) for x in xs]
    assert all(len(u) == 3 for u in uploads)
    for x, blobs in zip(xs, uploads, strict=True):
        assert np.max(np.abs(decrypt_chunks(secret, blobs) - x)) <= 1e-7
