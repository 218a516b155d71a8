"""The emulated GPU: answers the KFD ioctls and executes packets in Python."""
