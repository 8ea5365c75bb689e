<?php

/**
 * saslnetauth_originating_ip: tell the IMAP server the browser's address.
 *
 * Before it logs in, Roundcube sends the IMAP command
 *   ID ("x-originating-ip" "<browser address>")
 * on every IMAP connection it makes (one per HTTP request). Dovecot accepts
 * the field only from a client in its login_trusted_networks; it then
 * authenticates the login with rip=<browser address> and
 * real_rip=<Roundcube's own address>, so that saslnetauth judges the
 * browser's address, not the webmail's.
 *
 * The address is Roundcube's own rcube_utils::remote_addr(): REMOTE_ADDR,
 * or the X-Forwarded-For/X-Real-IP address when REMOTE_ADDR is listed in
 * Roundcube's proxy_whitelist (a reverse proxy in front of Roundcube).
 *
 * Uses the storage_connect hook's "preauth_ident" option (Roundcube 1.6,
 * verified with Debian 12's 1.6.5): its items are sent with ID before
 * authentication, while the "ident" option is sent only after LOGIN, too
 * late for the auth request.
 *
 * Part of saslnetauth (dovecot-examples/roundcube/README.md).
 * @license GNU GPLv3+
 */
class saslnetauth_originating_ip extends rcube_plugin
{
    public function init()
    {
        $this->add_hook('storage_connect', [$this, 'storage_connect']);
    }

    /**
     * Adds x-originating-ip to the ID items sent before LOGIN.
     *
     * @param array $args The connection options (host, user, preauth_ident, ...)
     *
     * @return array The options, with the browser's address in preauth_ident
     */
    public function storage_connect($args)
    {
        $ip = rcube_utils::remote_addr();

        // only a plain address: never a header's free text on the IMAP wire
        if (filter_var($ip, FILTER_VALIDATE_IP) === false) {
            return $args;
        }

        $ident = isset($args['preauth_ident']) && is_array($args['preauth_ident'])
            ? $args['preauth_ident'] : [];
        $ident['x-originating-ip'] = $ip;
        $args['preauth_ident'] = $ident;

        return $args;
    }
}
