# Alerts to the owner: a push through ntfy, a webhook, or e-mail, when the
# appliance needs them (locked after a restart, backups failing, heat, a
# full or vanished drive) and once more when it is fixed. A timer runs
# `immich-server alerts check`; its first run comes shortly after boot, once
# the network is up, so that a power cut is reported while the drive is
# still locked.
{
  config,
  lib,
  utils,
  ...
}:

let
  inherit (lib)
    mkOption
    mkIf
    types
    ;
  al = import ./lib.nix { inherit lib utils config; };
  inherit (al)
    cfg
    defaults
    s
    unitAttr
    ;
  a = cfg.alerts;
  d = defaults.alerts;
  exe = "${cfg.package}/bin/immich-server";
  httpUrl = types.strMatching "https?://[^[:space:]]+";
  anyChannel = s.alerts.ntfy-url != "" || s.alerts.webhook-url != "" || s.alerts.smtp-host != "";
in
{
  options.services.immich-appliance.alerts = {
    name = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "Photos at home";
      description = "The appliance's name at the start of every alert; null uses the host name.";
    };

    pageUrl = mkOption {
      type = types.nullOr httpUrl;
      default = null;
      example = "https://immich.tail1234.ts.net/";
      description = ''
        An address every alert names and ntfy opens when the alert is
        tapped: the appliance's page, or Immich over Tailscale. null names
        none; the alerts then say which command to run.
      '';
    };

    ntfy = {
      url = mkOption {
        type = types.nullOr (types.strMatching "https?://[^/[:space:]]+/[-_A-Za-z0-9]{1,64}");
        default = null;
        example = "https://ntfy.sh/immich-7f3k9q2m4x";
        description = ''
          The ntfy topic alerts are published to: subscribe to it in the ntfy
          app on your phone. ntfy.sh needs no account, so the topic name is
          the only key to your alerts: make it long and random. It is stored
          on the SD card, as the "locked" alert goes out before the drive is
          unlocked (docs/threat-model.md); alerts carry no photo, no name and
          no secret.
        '';
      };
      priority = mkOption {
        type = types.enum [
          "min"
          "low"
          "default"
          "high"
          "urgent"
        ];
        default = d.ntfy-priority;
        example = "urgent";
        description = "ntfy's priority for a new alert (it sets how the phone rings); \"resolved\" messages use `default`.";
      };
    };

    webhookUrl = mkOption {
      type = types.nullOr httpUrl;
      default = null;
      example = "http://homeassistant.local:8123/api/webhook/immich-appliance";
      description = ''
        A URL that receives a JSON POST per alert and per "resolved", with
        the keys appliance, condition, event (raised, resolved or test),
        title, message, page_url and time.
      '';
    };

    email = {
      smtpHost = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "smtp.fastmail.com";
        description = ''
          The SMTP server e-mail alerts go through; null turns e-mail off.
          Its password is a file on the drive (`immich-server alerts
          email-password`), so e-mail starts after the unlock and never
          carries the "locked" alert: pair it with ntfy for that one.
        '';
      };
      port = mkOption {
        type = types.port;
        default = d.smtp-port;
        example = 465;
        description = "The SMTP server's port: usually 587 with STARTTLS, 465 with TLS.";
      };
      security = mkOption {
        type = types.enum [
          "starttls"
          "tls"
          "plain"
        ];
        default = d.smtp-security;
        example = "tls";
        description = ''
          How the connection is encrypted. `plain` is accepted only when
          smtpHost is this machine (a local relay).
        '';
      };
      user = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "me@fastmail.com";
        description = "The SMTP login; null logs in as nobody.";
      };
      from = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "Immich appliance <me@fastmail.com>";
        description = "The sender of e-mail alerts.";
      };
      to = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "me@example.org" ];
        description = "Who receives e-mail alerts.";
      };
    };

    checkEvery = mkOption {
      type = types.strMatching "[0-9]+(s|min|h)";
      default = "5min";
      example = "15min";
      description = ''
        How often the conditions are checked: an alert arrives within this
        time of its cause. The first check runs a minute after boot, once
        the network is up, so that a restart is reported while the drive is
        still locked.
      '';
    };
  };

  config = mkIf (cfg.enable && anyChannel) {
    assertions = [
      {
        assertion = a.email.smtpHost == null || (a.email.from != null && a.email.to != [ ]);
        message = "services.immich-appliance.alerts.email needs `from` and at least one address in `to` when smtpHost is set.";
      }
    ];

    # Not bound to the drive: the "locked" alert is its reason to be.
    systemd.services.${unitAttr s.units.alerts} = {
      description = "Immich appliance alerts check";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${exe} alerts check";
        # State on the SD card: condition names and times only.
        StateDirectory = "immich-appliance";
        TimeoutStartSec = "5min";
        Nice = 10;
      };
    };

    systemd.timers.${unitAttr s.units.alerts-timer} = {
      description = "Immich appliance alerts check, every ${a.checkEvery}";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = "1min";
        OnUnitActiveSec = a.checkEvery;
        Unit = s.units.alerts;
      };
    };
  };
}
