"""Face model: image hygiene (`ml.images`), weight provisioning
(`ml.provision`), the engine (`ml.engine`) and the verifier (`ml.verifier`).

Importing this package imports no framework; TensorFlow is loaded when an
engine is built or weights are provisioned.
"""

from ml._tf import environment

environment()
