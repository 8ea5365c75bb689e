<?php
// saslnetauth: settings to ADD to Roundcube's own configuration
// (Debian: /etc/roundcube/config.inc.php), not a configuration of its own.
// dovecot-examples/roundcube/README.md explains them.

// IMAP: tell Dovecot the browser's address before every login. Dovecot takes
// it only from its login_trusted_networks (Roundcube's address there).
// After the existing $config['plugins'] = [...] line:
$config['plugins'][] = 'saslnetauth_originating_ip';

// SMTP: send XCLIENT ADDR=<browser address> before AUTH, so that Postfix's
// SASL request carries the browser's address. Postfix offers XCLIENT only to
// its smtpd_authorized_xclient_hosts (Roundcube's address there); elsewhere
// Roundcube sends no XCLIENT and its SMTP AUTH comes from its own address.
$config['smtp_xclient_addr'] = true;

// Keep smtp_xclient_login off (the default): XCLIENT LOGIN= would make
// Postfix treat the session as logged in without asking saslnetauth.
$config['smtp_xclient_login'] = false;

// Behind a reverse proxy (nginx, HAProxy) in front of Roundcube: list the
// proxy's address here, so that the browser's address is taken from
// X-Forwarded-For / X-Real-IP (by the plugin and by XCLIENT alike).
// $config['proxy_whitelist'] = ['127.0.0.1'];
