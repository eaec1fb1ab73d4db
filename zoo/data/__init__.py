"""DataModules for real dataset formats shared by several papers."""
from zoo.data.celeba import CelebADataModule, read_partition
from zoo.data.chexpert import CheXpertDataModule, TwoViewCheXpertDataModule
from zoo.data.cifar import CIFAR10DataModule, read_cifar_bin
from zoo.data.coco import COCODetectionDataModule, read_coco
from zoo.data.digits import DigitsDataModule
from zoo.data.idx import IDXDataModule, read_idx
from zoo.data.imagefolder import ImageFolderData
from zoo.data.meshes import SolidMeshDataModule, read_solid
from zoo.data.parsing import TreebankDataModule
from zoo.data.pcam import PCamDataModule, TwoViewPCamDataModule
from zoo.data.point_clouds import (ImagePointCloudDataModule, MeshPointCloudDataModule, ShapeNetCoreDataModule,
                                   ShapeNetPointCloudDataModule)
from zoo.data.panoptic import COCOPanopticDataModule, read_panoptic
from zoo.data.scenes import SceneDetectionDataModule, ScenePanopticDataModule
from zoo.data.shapenet import ShapeNetOccupancyDataModule, read_r2n2_views
from zoo.data.silhouettes import SilhouetteDataModule
from zoo.data.speech import SpeechDataModule
from zoo.data.svhn import SVHNDataModule, read_svhn_mat
from zoo.data.tabular import TabularDataModule
from zoo.data.text import TextDataModule, Vocabulary
from zoo.data.treecrowns import TreeCrownDataModule
from zoo.data.lambertian import LambertianObjectsDataModule, photometric_stereo
from zoo.data.yaleb import YaleBDataModule, YaleBSubjectsDataModule, read_yaleb

__all__ = ["CelebADataModule", "read_partition", "CIFAR10DataModule", "read_cifar_bin", "COCODetectionDataModule",
           "read_coco", "COCOPanopticDataModule", "read_panoptic", "ScenePanopticDataModule", "DigitsDataModule", "IDXDataModule", "ImageFolderData", "read_idx", "SceneDetectionDataModule",
           "TreebankDataModule",
           "SpeechDataModule", "SVHNDataModule", "read_svhn_mat", "TabularDataModule", "TextDataModule", "Vocabulary",
           "TreeCrownDataModule", "PCamDataModule", "TwoViewPCamDataModule", "CheXpertDataModule",
           "TwoViewCheXpertDataModule",
           "SilhouetteDataModule", "SolidMeshDataModule", "read_solid", "ShapeNetOccupancyDataModule",
           "read_r2n2_views", "ImagePointCloudDataModule", "MeshPointCloudDataModule", "ShapeNetCoreDataModule",
           "ShapeNetPointCloudDataModule", "YaleBDataModule", "YaleBSubjectsDataModule", "read_yaleb",
           "LambertianObjectsDataModule", "photometric_stereo"]
