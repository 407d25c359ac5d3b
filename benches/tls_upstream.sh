#!/usr/bin/env bash
# What an HTTPS upstream costs the gateway: the same streams through one nginx (Debian package)
# in front of the scripted upstream, once over plain HTTP and once over TLS (a fresh self-signed
# certificate, trusted through the pool's `tls.ca_file`). Usage (after `make build`):
#   benches/tls_upstream.sh [rates, default "500 1000"] [seconds per run, default 6]
# Prints one JSON line per run from the load generator, labelled.
set -euo pipefail
RATES=${1:-"500 1000"}
SECONDS_PER_RUN=${2:-6}
BIN=${CARGO_TARGET_DIR:-$HOME/.cache/reasoning-gateway/target}/release
T=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$T"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# A throw-away CA and a server certificate it signs (rustls refuses a CA certificate as the
# server's own).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
  -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$T/key.pem" -out "$T/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$T/ext.cnf"
openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 1 \
  -extfile "$T/ext.cnf" -out "$T/cert.pem" 2>/dev/null
UP=$(port); PLAIN=$(port); TLS=$(port); GW=$(port); ADMIN=$(port)
"$BIN/bench-upstream" "$UP" 64 0 & wait_port "$UP"
cat > "$T/nginx.conf" <<CONF
worker_processes 2; pid $T/nginx.pid; error_log $T/nginx.err warn;
events { worker_connections 8192; }
http { access_log off; upstream up { server 127.0.0.1:$UP; keepalive 512; }
  server { listen 127.0.0.1:$PLAIN; listen 127.0.0.1:$TLS ssl;
    ssl_certificate $T/cert.pem; ssl_certificate_key $T/key.pem;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; } } }
CONF
nginx -c "$T/nginx.conf" -g 'daemon off;' & wait_port "$PLAIN"
cat > "$T/gw.yaml" <<CONF
listen: 127.0.0.1:$GW
admin_listen: 127.0.0.1:$ADMIN
threads: 2
upstreams:
  - { name: plain, endpoints: ["127.0.0.1:$PLAIN"] }
  - { name: tls, endpoints: ["127.0.0.1:$TLS"], tls: { ca_file: "$T/ca.pem" } }
routes:
  - { model: plain, upstream: plain, upstream_model: bench, reasoning: { parser: deepseek_r1 } }
  - { model: tls, upstream: tls, upstream_model: bench, reasoning: { parser: deepseek_r1 } }
CONF
RUST_LOG=warn "$BIN/reasoning-gateway" serve --config "$T/gw.yaml" 2>"$T/gw.log" & GWPID=$!
wait_port "$GW"
cpu() { awk '{print $14+$15}' /proc/"$GWPID"/stat; }
for rate in $RATES; do
  for model in plain tls plain tls; do
    before=$(cpu)
    out=$("$BIN/loadgen" "http://127.0.0.1:$GW/v1/chat/completions" "$rate" "$SECONDS_PER_RUN" stream "$model" | tail -1)
    after=$(cpu)
    [ "${out#*\"errors\":0,}" != "$out" ] || { echo "errors through $model; gateway log:" >&2; tail -5 "$T/gw.log" >&2; }
    echo "{\"upstream\":\"$model\",\"rate\":$rate,\"gateway_cpu_ticks\":$((after - before)),\"loadgen\":$out}"
  done
done
