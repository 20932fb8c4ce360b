# Sourced by .ci/run: makes sure a PostgreSQL server runs on this machine
# (installing Debian's package if needed), creates a role and database for the
# tests, and exports HEARTH_TEST_POSTGRES. Works whether PostgreSQL is missing,
# installed but stopped, or already running.
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing PostgreSQL"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi
pg_version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$pg_version main"; then
  pg_createcluster "$pg_version" main >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$pg_version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
fi
pg_port=$(pg_lsclusters -h | awk -v v="$pg_version" '$1==v && $2=="main" {print $3}')
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p "$pg_port" && break
  sleep 1
done
pg_isready -h 127.0.0.1 -p "$pg_port"
su postgres -c "psql -q -p $pg_port -tc \"SELECT 1 FROM pg_roles WHERE rolname='hearth'\"" | grep -q 1 ||
  su postgres -c "psql -q -p $pg_port -c \"CREATE ROLE hearth LOGIN PASSWORD 'hearth'\""
su postgres -c "psql -q -p $pg_port -tc \"SELECT 1 FROM pg_database WHERE datname='hearth_test'\"" | grep -q 1 ||
  su postgres -c "createdb -p $pg_port -O hearth hearth_test"
# Dendrite, which the import test (importdendrite) fills before importing
# it, gets a database of its own.
su postgres -c "psql -q -p $pg_port -tc \"SELECT 1 FROM pg_database WHERE datname='hearth_dendrite_test'\"" | grep -q 1 ||
  su postgres -c "createdb -p $pg_port -O hearth hearth_dendrite_test"
export HEARTH_TEST_POSTGRES="postgres://hearth:hearth@127.0.0.1:${pg_port}/hearth_test?sslmode=disable"
