"""Stubs generated from proto/pushgate/v1/push.proto by gen_proto.py. Do not
edit them: change the proto and run `python gen_proto.py`."""
