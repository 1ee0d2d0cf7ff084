"""The agents of the mesh, one package each; they talk only over HTTP."""
