from __future__ import annotations

import numpy as np

from crypto.ckks import CKKSParameters, SecretCKKSContext, decrypt_chunks
from crypto.ckks.parallel import CKKSWorkerPool

PARAMS = CKKSParameters(poly_modulus_degree=4096, coeff_mod_bit_sizes=(50, 59), scale_bits=39)


def test_worker_pool_encrypts_and_sums_like_the_serial_path() -> None:
    secret = SecretCKKSContext.generate(PARAMS)
    rng = np.random.default_rng(3)
    xs = [rng.uniform(-1, 1, size=(3, PARAMS.slots)) for _ in range(4)]
    with CKKSWorkerPool(secret.public(), workers=2) as pool:
        uploads = [pool.encrypt(x) for x in xs]
        assert all(len(u) == 3 for u in uploads)
        broken = [uploads[0][0][:50], *uploads[0][1:]]
        total, added, failed = pool.sum([*uploads, broken], n_chunks=3)
    assert added == [0, 1, 2, 3]
    assert list(failed) == [4]
    assert total is not None
    got = decrypt_chunks(secret, total)
    assert np.max(np.abs(got - sum(xs))) <= 1e-7
