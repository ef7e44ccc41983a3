# Sourced (not run) by the scripts that install Debian packages as root on a fresh machine.
# A fresh machine often runs its own apt for minutes after boot (apt-daily's update,
# unattended-upgrades): wait for its locks rather than fail, and retry downloads.
apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)

# apt_update: apt-get update, waiting up to 10 min for another apt. It does not apply
# DPkg::Lock::Timeout to the package lists' lock ("Unable to lock directory /var/lib/apt/lists/"),
# so it is retried.
apt_update() {
    local tries=1
    until apt-get "${apt_opts[@]}" update -qq; do
        [ $tries -lt 60 ] || return 1
        tries=$((tries + 1))
        sleep 10
    done
}

# apt_install [OPTION...] PACKAGE...: apt-get install -y, quietly, waiting up to 10 min for
# another apt's dpkg lock.
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -qq "$@" >/dev/null
}
