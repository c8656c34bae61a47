"""fsnet-mmdet: FSNet (Filter Summary CNNs, ICLR 2020) as an MMDetection 3.x plugin."""
from setuptools import find_packages, setup

setup(
    name='fsnet-mmdet',
    version='0.1.0',
    description='FSNet filter-summary convolutions for MMDetection 3.x',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.11,<3.12',
    packages=find_packages(include=['fsnet_mmdet', 'fsnet_mmdet.*']),
    install_requires=[
        # Pinned to the combination that works together (see README "Compatibility").
        'torch==2.13.0',
        'mmcv==2.1.0',
        'mmdet==3.3.0',
        'mmengine==0.10.7',
        'pycocotools',
        'numpy',
        'setuptools>=77.0.3,<81',
    ],
    extras_require={
        'tests': ['pytest', 'pytest-xdist', 'hypothesis'],
        # ONNX export (TorchScript exporter: no onnxscript) and onnxruntime.
        'deploy': ['onnx==1.23.2', 'onnxruntime==1.32.0'],
    },
)
