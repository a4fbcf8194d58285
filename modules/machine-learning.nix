# Machine learning (smart search, faces, OCR): on the Pi, off, or on a bigger
# machine on the tailnet with the Pi as a fallback.
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
    literalExpression
    ;
  al = import ./lib.nix { inherit lib utils config; };
  inherit (al) cfg;
  ml = cfg.machineLearning;
  bigBoard = cfg.boardMemoryGiB >= 8;
in
{
  options.services.immich-appliance.machineLearning = {
    mode = mkOption {
      type = types.enum [
        "local"
        "remote"
        "off"
      ];
      default = if bigBoard then "local" else "off";
      defaultText = literalExpression ''if boardMemoryGiB >= 8 then "local" else "off"'';
      example = "remote";
      description = ''
        Where Immich's machine learning runs. `local` runs it on the Pi,
        `remote` sends it to `remoteUrls` first, and `off` disables smart
        search and face recognition.

        The default follows `boardMemoryGiB`: Immich's requirements say
        machine learning needs more than 4 GB, and on a 4 GB Pi 4 it has
        made the board unresponsive for long periods (immich#2064), so a
        4 GB board defaults to `off` and an 8 GB board to `local`.
      '';
    };

    remoteUrls = mkOption {
      type = types.listOf (types.strMatching "https?://.+");
      default = [ ];
      example = [ "http://desktop.tail1234.ts.net:3003" ];
      description = ''
        Immich machine-learning servers to use in `remote` mode, in order,
        for example a desktop on the tailnet running the
        `immich-machine-learning` container.
      '';
    };

    localFallback = mkOption {
      type = types.bool;
      default = bigBoard;
      defaultText = literalExpression "boardMemoryGiB >= 8";
      example = true;
      description = ''
        In `remote` mode, also run machine learning on the Pi, used when
        the remote servers are off. Immich tries healthy URLs first.
      '';
    };

    threads = mkOption {
      type = types.ints.between 1 4;
      default = 2;
      example = 1;
      description = ''
        Threads per model and concurrent requests of the local service.
        Two leave the Pi's other cores to thumbnails, transcoding and the
        web UI.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = ml.mode == "remote" -> ml.remoteUrls != [ ];
        message = "services.immich-appliance.machineLearning.mode is \"remote\": set machineLearning.remoteUrls to the machine-learning servers to use.";
      }
    ];

    services.immich.machine-learning = {
      enable = ml.mode == "local" || (ml.mode == "remote" && ml.localFallback);
      environment = {
        MACHINE_LEARNING_REQUEST_THREADS = toString ml.threads;
        MACHINE_LEARNING_MODEL_INTRA_OP_THREADS = toString ml.threads;
        MACHINE_LEARNING_MODEL_INTER_OP_THREADS = "1";
        # Unload idle models after five minutes to give the memory back.
        MACHINE_LEARNING_MODEL_TTL = "300";
      };
    };
  };
}
