from setuptools import Extension, setup

# The numeric-JSON decoder of the REST server (tfdeploy.serving.json_fast): optional, so an
# install without a C compiler still works, on json_fast's pure-Python path (slower).
setup(ext_modules=[Extension("tfdeploy.serving._numjson", ["tfdeploy/serving/_numjson.c"],
                             optional=True)])
