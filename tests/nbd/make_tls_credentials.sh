#!/bin/sh
# make_tls_credentials.sh DIR: test credentials for the NBD TLS tests, made with the
# openssl CLI at test time (nothing secret is kept in the tree):
#   DIR/server/     ca-cert.pem server-cert.pem server-key.pem   (tapdisk-map --nbd-tls-certificates)
#   DIR/client/     ca-cert.pem client-cert.pem client-key.pem   (qemu tls-creds-x509 / nbdinfo tls-certificates)
#   DIR/stranger/   the same, but signed by another CA            (must be refused)
#   DIR/nocert/     ca-cert.pem only                              (a client without a certificate)
#   DIR/server.psk  alice and bob                                 (tapdisk-map --nbd-tls-psk)
#   DIR/psk/keys.psk alice's key; DIR/wrongpsk/keys.psk alice with another key
# The server certificate names localhost and 127.0.0.1.
set -eu
dir=$1
mkdir -p "$dir/server" "$dir/client" "$dir/stranger" "$dir/nocert" "$dir/psk" "$dir/wrongpsk" "$dir/work"
cd "$dir/work"

ca() {  # ca NAME: NAME-key.pem, NAME-cert.pem
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1-key.pem" -out "$1-cert.pem" -days 2 \
    -subj "/CN=tapmap test $1" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
leaf() {  # leaf CA NAME CN EXTS: NAME-key.pem, NAME-cert.pem signed by CA
  openssl req -newkey rsa:2048 -nodes -keyout "$2-key.pem" -out "$2.csr" -subj "/CN=$3" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "$4" >"$2.ext"
  openssl x509 -req -in "$2.csr" -CA "$1-cert.pem" -CAkey "$1-key.pem" -CAcreateserial -days 2 \
    -out "$2-cert.pem" -extfile "$2.ext" 2>/dev/null
}
ca ca
ca otherca
leaf ca server localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
leaf ca client client1 "extendedKeyUsage=clientAuth"
leaf otherca stranger stranger "extendedKeyUsage=clientAuth"

cp ca-cert.pem "$dir/server/ca-cert.pem"
cp server-cert.pem "$dir/server/server-cert.pem"
cp server-key.pem "$dir/server/server-key.pem"
for d in client nocert stranger; do cp ca-cert.pem "$dir/$d/ca-cert.pem"; done
cp client-cert.pem "$dir/client/client-cert.pem"
cp client-key.pem "$dir/client/client-key.pem"
cp stranger-cert.pem "$dir/stranger/client-cert.pem"
cp stranger-key.pem "$dir/stranger/client-key.pem"

alice=$(openssl rand -hex 32)
echo "alice:$alice" >"$dir/psk/keys.psk"
echo "alice:$(openssl rand -hex 32)" >"$dir/wrongpsk/keys.psk"
printf 'alice:%s\nbob:%s\n' "$alice" "$(openssl rand -hex 32)" >"$dir/server.psk"
chmod 600 "$dir"/*/*key.pem "$dir"/*.psk "$dir"/*/keys.psk
rm -rf "$dir/work"
