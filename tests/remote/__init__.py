"""The remote-engine tests: one package, so its vLLM server is one package fixture."""
