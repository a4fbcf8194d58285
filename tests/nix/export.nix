# What `cargo xtask nix-test` checks outside Nix: the option paths the stubs
# declare (against NixOS's option list) and the config.toml the module
# writes for several configurations (against the Rust config loader).
#   nix-instantiate --eval --strict --json tests/nix/export.nix --arg lib '...'
{ lib }:

let
  e = import ./eval.nix { inherit lib; };
  s = cfg: (e.settings cfg);
  # The config.toml, and the module's own verdict on the configuration.
  both = cfg: {
    settings = s cfg;
    failed = e.failedAssertions cfg;
  };
in
{
  stubOptionPaths = e.stubOptionPaths;

  # docs/options.md is generated from these (`cargo xtask options-doc`).
  options = map (o: {
    inherit (o) name type description;
    default = o.default.text or null;
    example = o.example.text or null;
  }) e.applianceOptions;

  # Every one of these must load in immich-server; `rejected` must not.
  configs = lib.mapAttrs (_: both) {
    default = e.config [ ];
    inherit (e) rpi4 vm;
    custom = (
      e.config [
        {
          services.immich-appliance = {
            boardMemoryGiB = 8;
            drive.mountPoint = "/srv/my-photos";
            machineLearning = {
              mode = "remote";
              remoteUrls = [ "http://desktop.tail1234.ts.net:3003" ];
            };
            throttle = {
              setpointCelsius = 68;
              releaseCelsius = 62;
              quietHours = {
                start = "23:00";
                end = "07:00";
              };
              prometheusTextfile = "/var/lib/prometheus-node-exporter/immich.prom";
            };
            backup = {
              pingUrl = "https://hc-ping.com/0000";
              essentialOnly = true;
            };
            remoteAccess.tailscale = {
              serve = true;
              authKeyFromDrive = true;
            };
            alerts = {
              name = "Photos at home";
              pageUrl = "https://immich.tail1234.ts.net/";
              ntfy = {
                url = "https://ntfy.sh/immich-7f3k9q2m4x";
                priority = "urgent";
              };
              webhookUrl = "http://homeassistant.local:8123/api/webhook/immich";
              email = {
                smtpHost = "smtp.fastmail.com";
                port = 465;
                security = "tls";
                user = "me@fastmail.com";
                from = "Immich appliance <me@fastmail.com>";
                to = [ "me@example.org" ];
              };
            };
            settings.units.start-timeout-secs = 900;
          };
        }
      ]
    );
  };
  # The module cannot see these mistakes; the build's config check must.
  rejected = lib.mapAttrs (_: both) {
    unknown-key = e.config [ { services.immich-appliance.settings.units.bogus = 1; } ];
    wrong-type = e.config [ { services.immich-appliance.settings.units.start-timeout-secs = "soon"; } ];
    # Unencrypted SMTP is for a relay on the Pi itself.
    plain-smtp-to-another-host = e.config [
      {
        services.immich-appliance.alerts.email = {
          smtpHost = "smtp.example.org";
          security = "plain";
          from = "a@example.org";
          to = [ "b@example.org" ];
        };
      }
    ];
  };
}
