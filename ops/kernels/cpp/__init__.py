"""The C++ backend (``backend="cpp"``): fused CPU kernels of the Gaunt sphere-grid product
(:mod:`.gaunt`) and the SO(2) convolution (:mod:`.so2`), compiled on first use (:mod:`.build`)."""
