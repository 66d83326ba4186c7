#!/bin/sh
echo "$(cat "$APP_HOME/$GREETING_FILE") ($(cat "$APP_HOME/size.txt") bytes, user $(id -un), in $(pwd))"
