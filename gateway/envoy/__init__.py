"""The Envoy data plane: policy -> Envoy resources (`translate`), served over ADS (`xds_server`)
to Envoys bootstrapped by `bootstrap` and run by `supervisor`."""
