# Helpers the scripts source from the repository root: `. scripts/common.sh`.

# A free TCP port on 127.0.0.1 (bound, read, released: the caller binds it next).
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
