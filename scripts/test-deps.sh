#!/usr/bin/env bash
# Debian packages the test suite uses as real outside peers (Postfix's smtp-sink/smtp-source),
# as real mail clients of the site (isync's mbsync over IMAP, fetchmail over POP3, neomutt over
# IMAPS on a pseudo-terminal), and the browser the console's end-to-end tests drive (Debian's
# chromium, through Playwright),
# testssl.sh, which audits every TLS port of a running site (tests/integration/attacks). Then
# Dovecot's imaptest (IMAP compliance and stress), built by the shared build script (from
# ../shared/tools/imaptest, or $IMAPTEST_BUILD) into .venv/imaptest (or $IMAPTEST_DIR); it
# links against Debian's libdovecot (dovecot-core; the service is kept stopped). PostgreSQL's
# server programs (postgresql; the system cluster is kept stopped): the tests run private
# clusters on loopback (sitemail.lab.postgres).
# Installed only when missing; the system Postfix service is kept stopped: tests run their own
# private instances on loopback ports.
set -euo pipefail
need=()
command -v smtp-sink >/dev/null 2>&1 || [ -x /usr/sbin/smtp-sink ] || need+=(postfix)
command -v mbsync >/dev/null 2>&1 || need+=(isync)
command -v fetchmail >/dev/null 2>&1 || need+=(fetchmail)
command -v neomutt >/dev/null 2>&1 || need+=(neomutt)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v testssl >/dev/null 2>&1 || need+=(testssl.sh)
[ -e /usr/lib/dovecot/libdovecot.so ] || need+=(dovecot-core)
# OpenDKIM and OpenDMARC as Postfix milters: the outside verifier of our DKIM signatures
command -v opendkim >/dev/null 2>&1 || [ -x /usr/sbin/opendkim ] || need+=(opendkim opendkim-tools)
command -v opendmarc >/dev/null 2>&1 || [ -x /usr/sbin/opendmarc ] || need+=(opendmarc)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
build_imaptest() {
  local script=${IMAPTEST_BUILD:-../shared/tools/imaptest/build.sh}
  local dir=${IMAPTEST_DIR:-.venv/imaptest}
  if [ -x "$script" ] && [ ! -x "$dir/imaptest" ]; then
    "$script" "$dir" || echo "test-deps: imaptest did not build (its tests are skipped)" >&2
  fi
}
if [ ${#need[@]} -eq 0 ]; then build_imaptest; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "test-deps: missing ${need[*]}; run as root or install them (tests needing them are skipped)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the service on install; we only ever run private instances.
(command -v postfix >/dev/null && postfix status >/dev/null 2>&1 && postfix stop) || true
(command -v service >/dev/null && service dovecot stop >/dev/null 2>&1) || true
(command -v service >/dev/null && service opendkim stop >/dev/null 2>&1) || true
(command -v service >/dev/null && service opendmarc stop >/dev/null 2>&1) || true
(command -v service >/dev/null && service postgresql stop >/dev/null 2>&1) || true
build_imaptest
