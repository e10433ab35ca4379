"""Looking at a study while it runs or after: the TensorBoard view. Imports ``study.report`` and the layers below."""
