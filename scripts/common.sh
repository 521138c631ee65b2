# Helpers for the scripts that start servers of their own on 127.0.0.1;
# sourced, not run.

# A TCP port on 127.0.0.1 free right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# PORT: succeeds when GET /readyz on 127.0.0.1:PORT answers 200 (quietly
# fails while nothing listens there yet).
ready() {
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
  local status; read -r _ status _ <&3 || true; exec 3<&-
  [[ "$status" == 200 ]]
}
