"""RWKU's adversarial probe types as transforms of any question (see :mod:`audits.adversarial.audit`)."""
