"""The host side of the wire: client.py (DeviceClient), push.py (installs and rollouts),
flash.py (a device root laid out), local_brokers.py (Mosquitto or amqtt for the demo and tests)."""
