"""Site meters: register maps as data, Modbus TCP and HTTP sources."""
